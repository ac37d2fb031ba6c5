package paver.hostile

deny contains "resolves" if count(net.lookup_ip_addr("evil.example")) > 0
