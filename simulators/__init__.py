"""Modbus device simulators: register images from pysunspec2 models and register-map
profiles, value sources, fault injection (``foursave sim``)."""
