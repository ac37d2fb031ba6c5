package corpus

import input.request.spec as spec

big if spec.parameters.replicas > 5
