#!/usr/bin/env python
"""Write a synthetic personalization dataset in the official LaMP file layout.

    python scripts/make_synthetic_lamp.py --output data/synth7 --task lamp7 --train-users 300 --dev-users 32

The users are invented by commer_core.synthetic (templated facts and writing styles, seeded);
the result goes through `commer-pipeline prepare lamp7 --source DIR` like real LaMP files.
"""

from __future__ import annotations

import argparse
import json

from commer_core.synthetic import write_synthetic_lamp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--task", choices=["lamp4", "lamp7"], default="lamp7")
    parser.add_argument("--train-users", type=int, default=300)
    parser.add_argument("--dev-users", type=int, default=32)
    parser.add_argument("--test-users", type=int, default=0)
    parser.add_argument("--questions-per-user", type=int, default=2)
    parser.add_argument("--profile-size", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wide-train-facts", action="store_true",
                        help="train users draw from about five times as many fact values (held-out users unchanged)")
    parser.add_argument("--wide-train-styles", action="store_true",
                        help="train users draw from about three times as many style families (held-out users unchanged)")
    parser.add_argument("--invented-train-facts", action="store_true",
                        help="about half of each train user's facts are made-up words (held-out users unchanged)")
    args = parser.parse_args()
    users = {"train": args.train_users, "dev": args.dev_users}
    if args.test_users:
        users["test"] = args.test_users
    counts = write_synthetic_lamp(args.output, task=args.task, users=users, profile_size=args.profile_size,
                                  questions_per_user=args.questions_per_user, seed=args.seed,
                                  wide_train_facts=args.wide_train_facts, wide_train_styles=args.wide_train_styles,
                                  invented_train_facts=args.invented_train_facts)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
