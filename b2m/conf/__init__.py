"""The packaged configs, composed by Hydra (`pkg://b2m.conf`): a root file per job and a folder per group."""
