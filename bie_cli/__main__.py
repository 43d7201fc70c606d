from bie_cli.cli.app import main

raise SystemExit(main())
