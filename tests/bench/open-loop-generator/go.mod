module policyguard.dev/bench/open-loop-generator

go 1.24
