"""Episode datasets: HDF5 reader/writer in the reference layout and training clips."""
from .dataset import ClipDataset, action_blocks, EpisodeFile, fit_stats, make_datasets, present_columns, split_episodes
from .hdf5 import DatasetError, HDF5Writer, PathLock, WriteError, check_output_path, open_h5, read_column

EpisodeDataset = EpisodeFile  # alias: the opened, validated episode file

__all__ = ["ClipDataset", "action_blocks", "DatasetError", "EpisodeDataset", "EpisodeFile", "HDF5Writer", "fit_stats",
           "make_datasets", "present_columns", "open_h5", "read_column", "split_episodes", "PathLock", "WriteError",
           "check_output_path"]
