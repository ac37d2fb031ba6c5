package corpus

differ if a != b
