from bie_cli.cli.app import main, exit_without_teardown

exit_without_teardown(main())
