"""Neural architecture search: DARTS (mixed operations, first- and second-order bilevel steps, discretisation) on a
1-D cell space, with an equal-cost random-architecture baseline."""

from tricklab.paradigms.nas.darts import (OPS, PRIMITIVES, FixedNet, Genotype, MixedOp, SearchNet, darts_step,
                                          discretize, genotype_cost, random_genotype)

__all__ = ["OPS", "PRIMITIVES", "FixedNet", "Genotype", "MixedOp", "SearchNet", "darts_step", "discretize",
           "genotype_cost", "random_genotype"]
