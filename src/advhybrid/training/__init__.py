from .trainer import NonFiniteLossError, TrainConfig, augment, evaluate, fit, predict

__all__ = ["NonFiniteLossError", "TrainConfig", "augment", "evaluate", "fit", "predict"]
