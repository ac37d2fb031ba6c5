package corpus

big := [x | x > 10]
