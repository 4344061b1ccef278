"""Each node's parameters described once (specs), and ROS-free builders of the core objects.

`spec` holds the machinery (ParamSpec, NodeSpec; usage in its docstring), `common` the parameters
several nodes share (`system`, `model.*`, `task.*`), one module per node its spec and builder;
`registry.NODE_SPECS` lists the specs whose tables docs/ARCHITECTURE.md shows.
"""
