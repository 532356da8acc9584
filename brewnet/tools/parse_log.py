"""parse_log: a Caffe (or brewnet) training log -> two CSV tables, LOG.train and LOG.test (Caffe's
tools/extra/parse_log.py).

    brewnet parse_log [--verbose] [--delimiter ,] LOGFILE OUTPUT_DIR

Rows are keyed by iteration: NumIters, Seconds (since the "Solving" line; nothing before it is read),
LearningRate (the last `lr = ` seen), then one column per net output ("Train net output #0: loss = 0.25" ->
column loss).  The regular expressions are Caffe's own, so a log either program wrote parses the same way.
Timestamps may be glog's classic `I1127 ...` or the newer `I20261127 ...` with the year.
"""
import argparse
import csv
import datetime
import os
import re
import sys

REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def extract_datetime(line, year):
    """The time of a glog line: 'I1127 10:00:00.123456 ...' (the year given) or 'I20261127 10:00:00.123456'."""
    fields = line.strip().split()
    stamp, clock = fields[0][1:], fields[1]
    if len(stamp) == 8:
        year, stamp = int(stamp[:4]), stamp[4:]
    month, day = int(stamp[0:2]), int(stamp[2:4])
    seconds, _, micros = clock.rpartition(".")
    hour, minute, second = (int(x) for x in seconds.split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(micros))


def log_year(path):
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def _start(lines, year):
    """(index of the line after "Solving ...", its time); Caffe's parser reads nothing before that line."""
    for i, line in enumerate(lines):
        if "Solving" in line:
            return i + 1, extract_datetime(line, year)
    return len(lines), None


def parse_log(path):
    """Return (train_rows, test_rows): lists of dicts, as Caffe's parse_log."""
    year = log_year(path)
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    first, start = _start(lines, year)
    iteration, learning_rate = -1, float("nan")
    train_rows, test_rows = [], []
    train_row = test_row = None
    last = start
    for line in lines[first:]:
        match = REGEX_ITERATION.search(line)
        if match:
            iteration = float(match.group(1))
        if iteration == -1:
            continue      # nothing counts before the first iteration
        try:
            when = extract_datetime(line, year)
        except (ValueError, IndexError):
            continue      # not a log line (a continuation, a resumed run's banner)
        if last is not None and when.month < last.month:
            year += 1
            when = extract_datetime(line, year)
        last = when
        seconds = (when - start).total_seconds()
        match = REGEX_LEARNING_RATE.search(line)
        if match:
            learning_rate = float(match.group(1))
        train_rows, train_row = _parse_output(REGEX_TRAIN_OUTPUT, train_row, train_rows, line, iteration,
                                              seconds, learning_rate)
        test_rows, test_row = _parse_output(REGEX_TEST_OUTPUT, test_row, test_rows, line, iteration, seconds,
                                            learning_rate)
    _fix_initial_nan_learning_rate(train_rows)
    _fix_initial_nan_learning_rate(test_rows)
    return train_rows, test_rows


def _parse_output(regex, row, rows, line, iteration, seconds, learning_rate):
    match = regex.search(line)
    if match:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)   # a new iteration began before the row filled up
            row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": learning_rate}
        row[match.group(2)] = float(match.group(3))
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)           # as many columns as the first row: complete
        row = None
    return rows, row


def _fix_initial_nan_learning_rate(rows):
    """The first rows come before the first `lr =` line; Caffe copies the second row's rate there."""
    if len(rows) > 1:
        rows[0]["LearningRate"] = rows[1]["LearningRate"]


def write_csv(path, rows, delimiter=",", verbose=False):
    if not rows:
        if verbose:
            print(f"Not writing {path}; no lines to write")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    if verbose:
        print(f"Wrote {path}")


def save_csv_files(log_path, output_dir, train_rows, test_rows, delimiter=",", verbose=False):
    base = os.path.basename(log_path)
    write_csv(os.path.join(output_dir, base + ".train"), train_rows, delimiter, verbose)
    write_csv(os.path.join(output_dir, base + ".test"), test_rows, delimiter, verbose)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="parse_log", description="Parse a Caffe training log into two CSV "
                                     "files containing training and testing information")
    parser.add_argument("logfile_path", help="Path to log file")
    parser.add_argument("output_dir", help="Directory in which to place output CSV files")
    parser.add_argument("--verbose", action="store_true", help="Print some extra info (e.g., output filenames)")
    parser.add_argument("--delimiter", default=",", help="Column delimiter in output files (default: ',')")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isfile(args.logfile_path):
        print(f"parse_log: log file not found: {args.logfile_path}", file=sys.stderr)
        return 1
    train_rows, test_rows = parse_log(args.logfile_path)
    save_csv_files(args.logfile_path, args.output_dir, train_rows, test_rows, args.delimiter, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
