from convattn.cli import main

raise SystemExit(main())
