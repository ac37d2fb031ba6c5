package corpus

has_items if input.items[_]

any_enabled if input.items[_].enabled == true
