"""Models: the tiny Qwen2-VL presets and real checkpoints (`presets`), batching (`collate`), the
pretrained embedded bases (`base`), and SFT with evaluation (`train`). Imports `ost.data` and below.
"""
