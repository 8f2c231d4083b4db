"""advhybrid: the library every DVC stage of the Hybrid CIFAR-10 pipeline shares."""

__version__ = "0.1.0"
