"""`python -m ost.runs check CONFIG` / `python -m ost.runs execute NOTEBOOK OUTPUT …`."""
from ost.runs.notebooks import main

main()
