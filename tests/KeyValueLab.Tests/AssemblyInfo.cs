// libtorch keeps process-wide state (thread count, the default random generator) that some code
// legitimately sets; bit-exactness tests must not see another test change it halfway. On CI's two
// cores running test classes in parallel gains little, so they run one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
