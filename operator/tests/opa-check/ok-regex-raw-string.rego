package corpus

valid_image(img) if regex.match(`^registry\.example\.com/`, img)

deny contains img if {
	some c in input.containers
	img := c.image
	not valid_image(img)
}
