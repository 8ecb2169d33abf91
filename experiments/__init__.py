"""The studies rldyn ships (installed as rldyn.experiments): one config file each, `get_config(arg)`."""
