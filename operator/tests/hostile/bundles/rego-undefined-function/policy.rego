package paver.hostile

deny contains "x" if {
	http.send({"method": "get", "url": "http://169.254.169.254/latest/meta-data/"}).status_code == 200
}
