from loopformer.cli.entry import main

main()
