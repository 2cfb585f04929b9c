"""Applications on top of the library: the ``apdepth`` command line (:mod:`.cli`, one module per
subcommand in :mod:`.commands`) and the local web demo (:mod:`.web_demo`)."""
