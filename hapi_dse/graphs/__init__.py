"""The graphs of a design, shared by profiling and deployment: neither stage reaches into the
other, both import these.

- :mod:`~hapi_dse.graphs.graph`: a design as torch modules with its exit decisions inside
  (one graph, one stage, or no control flow at all) and :func:`~hapi_dse.graphs.graph.decide`,
  the same decisions on numpy arrays.
- :mod:`~hapi_dse.graphs.compose`: the same graphs assembled in ONNX from cuts of the network
  exported once.
- :mod:`~hapi_dse.graphs.single`: the one-graph writer (:func:`write_single_graph`), which
  ``hapi export`` and the deployment probes both call, and its ONNX rewrites
  (:mod:`~hapi_dse.graphs.onnx_passes`).
- :mod:`~hapi_dse.graphs.probes`: the deployment probes that ``hapi profile`` times.

Importing this package pulls in neither torch, onnx nor onnxruntime.
"""
