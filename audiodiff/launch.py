"""python -m audiodiff.launch [torchrun options] -m audiodiff.train OVERRIDES...: torchrun, with its
failures to meet said in one line.

The recipes start multi-process and multi-node training through here (egs/common/recipe.sh:
--nproc, --nnodes, --node-rank, --rdzv-endpoint, --rdzv-id, --rdzv-timeout, --max-restarts). It is
torchrun itself (torch.distributed.run, the same options), except that a rendezvous that times out
or closes, the usual sign of a node that never started or cannot reach the endpoint, ends with one
line naming the endpoint, the wait and what to check, and exit status 1, instead of a traceback.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import (RendezvousClosedError, RendezvousConnectionError,
                                                          RendezvousTimeoutError)
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # A node that dies and is started again must be able to rejoin. With the agent-hosted TCP store that
    # torch shares with the workers by default, the surviving agent keeps the store address of the first
    # round and the new agent waits for one that is never published (pytorch/pytorch#135712): each round
    # then publishes its own, as before torch 2.5. An explicit setting in the environment wins.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    try:
        run(args)
    except (RendezvousTimeoutError, RendezvousClosedError) as e:
        conf = dict(kv.split("=", 1) for kv in (args.rdzv_conf or "").split(",") if "=" in kv)
        wait = conf.get("join_timeout", "600")
        print(f"audiodiff.launch: the rendezvous {args.rdzv_id!r} at {args.rdzv_endpoint} "
              f"{'timed out' if isinstance(e, RendezvousTimeoutError) else 'was closed'} after {wait} s with "
              f"fewer than --nnodes {args.nnodes} nodes; start the same command on every node, and check that each "
              f"reaches {args.rdzv_endpoint}", file=sys.stderr)
        return 1
    except RendezvousConnectionError:
        print(f"audiodiff.launch: cannot reach the rendezvous store at {args.rdzv_endpoint} (node 0's agent hosts "
              "it: it may have stopped, or the host or port is not reachable from here); start node 0 first and "
              "check the endpoint", file=sys.stderr)
        return 1
    except ChildFailedError as e:
        print(e, file=sys.stderr)  # torchrun's table: which rank failed, its exit code and error file
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
