from bie_cli.cli.app import main_entry

main_entry()
