package corpus

ok if any([input.a, input.b])
