"""Bags: writing rosbag2 MCAP bags (the recorder node), reading them and reporting, without ROS."""
