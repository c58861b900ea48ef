from gitmodel.cli import main

raise SystemExit(main())
