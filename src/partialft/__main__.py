from partialft.cli import main

raise SystemExit(main())
