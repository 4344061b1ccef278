"""Run ROS 2 XML launch files without the `launch` library (which is not installable everywhere).

`launch_xml` turns a file into a plan of node processes; `runner` runs the plan as separate
processes or composed in one process. Unsupported elements, attributes or substitutions are errors.
"""
