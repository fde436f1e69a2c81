from varro.cli import main

main()
