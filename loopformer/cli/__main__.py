from loopformer.cli.command import main

main()
