from vmhost.cli.app import main

main()
