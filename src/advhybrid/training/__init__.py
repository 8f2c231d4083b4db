from .trainer import NonFiniteLossError, TrainConfig, augment, evaluate, fit, predict, saved_epoch

__all__ = ["NonFiniteLossError", "TrainConfig", "augment", "evaluate", "fit", "predict", "saved_epoch"]
