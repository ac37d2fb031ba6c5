package corpus

pci if "pci" in input.request.spec.labels

pci_key if some "pci", _ in input.request.spec.flags
