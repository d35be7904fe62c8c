"""What serves test suites: the pytest plugin (a thin adapter), the warm pool of copies, recycling, transactions.

May import: anything below `api` (builds/, postgres/, targets/, the top-level modules) and `api` itself (the
plugin asks it for templates). Nothing imports this folder except pytest, through the entry point.
"""
