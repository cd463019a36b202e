"""``python -m lambgw``: the admin command of the embedded network."""

from lambgw.admin import main

raise SystemExit(main())
