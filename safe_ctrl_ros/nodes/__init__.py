"""ROS 2 nodes: one module per node; each module is an executable (`ros2 run safe_ctrl_ros <module>`).

Every module here must define `main()`; CMakeLists.txt and setup.py both derive their executable
lists from this folder, so helper code belongs in safe_ctrl_ros.ros, not here.
"""
