"""The retrain flow: snapshot -> drift -> train -> evaluate (paired bootstrap) -> gate ->
promote (conditional champion move + event) or reject. `flow` holds the steps as the state
machine calls them; `evaluate` and `gate` decide what "really better" means."""
