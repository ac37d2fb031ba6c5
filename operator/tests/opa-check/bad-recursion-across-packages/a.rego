package a

x if data.b.y
