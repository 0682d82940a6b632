from morphserve.cli import main

main()
