"""Examples: the bundled run (``fashion-mnist/``) and a stand-in for your own pretrained
network (:mod:`hapi_dse.examples.pretrained`)."""
