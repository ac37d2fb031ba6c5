package b

y if data.a.x
