"""The embedded world: drawn scenes and their captions (`scenes`), the default dataset written from them as real
shards (`synthetic`), and the held-out glyph world of the learning benchmark (`glyph_world`).

Nothing here reads user data, and the loading machinery in `clip_train.data` streams these shards exactly as it
streams anyone's: it imports this package only to write the default set (`SyntheticShards`).
"""
