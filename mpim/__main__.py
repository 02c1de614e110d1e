from mpim.cli import main

main()
