from idprov.cli.main import main

main()
