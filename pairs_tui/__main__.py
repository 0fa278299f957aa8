from pairs_tui.cli import main

main()
