"""Metrics: Frechet distance (digits / MNIST classifier and mel features), reconstruction scores,
sequence metrics, and the CSV / markdown / PNG writers the sweeps share."""
from latentar.metrics.audio import log_mel, mel_distance, mel_fd, mel_features, si_snr
from latentar.metrics.digits_classifier import (DigitsClassifier, ImageClassifier, MnistClassifier, digits_fd,
                                                digits_features, image_fd, image_features, load_classifier,
                                                load_digits_classifier, load_mnist_classifier, mnist_fd,
                                                mnist_features, train_classifier, train_digits_classifier,
                                                train_mnist_classifier)
from latentar.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats
from latentar.metrics.plots import (markdown_table, read_table, save_lines, write_json, write_markdown_table,
                                    write_table)
from latentar.metrics.psnr import psnr
from latentar.metrics.text import exact_match, first_divergence, seq_rep_n

__all__ = [
    "frechet_distance", "gaussian_stats", "frechet_distance_from_features",
    "DigitsClassifier", "load_digits_classifier", "train_digits_classifier", "digits_features", "digits_fd",
    "ImageClassifier", "load_classifier", "train_classifier", "image_features", "image_fd",
    "MnistClassifier", "load_mnist_classifier", "train_mnist_classifier", "mnist_features", "mnist_fd",
    "log_mel", "mel_features", "mel_fd", "mel_distance", "si_snr", "psnr",
    "exact_match", "seq_rep_n", "first_divergence",
    "save_lines", "write_table", "read_table", "markdown_table", "write_markdown_table", "write_json",
]
