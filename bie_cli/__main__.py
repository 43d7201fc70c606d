from bie_cli.cli.app import exit_without_teardown, main

exit_without_teardown(main())
