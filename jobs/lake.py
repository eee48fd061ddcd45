"""The lake through Hadoop's FileSystem (so s3a://, gs:// and hdfs:// lakes work as local ones), and UTC days.

Outputs are written to a staging folder and swapped in by rename (:func:`replace_by_rename`), so readers
see the old or the new folder, never a partial one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from jobs.spark import PARQUET_TIMESTAMP_TYPE, PARQUET_TIMESTAMP_TYPE_KEY


def midnight(day: dt.date) -> dt.datetime:
    """00:00 UTC of ``day``."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """(Hadoop FileSystem, Path) JVM objects for a local path or a URI."""
    jpath = spark._jvm.org.apache.hadoop.fs.Path(path)
    return jpath.getFileSystem(spark._jsc.hadoopConfiguration()), jpath


def exists(spark: SparkSession, path: str) -> bool:
    fs, jpath = hadoop_path(spark, path)
    return bool(fs.exists(jpath))


def size(spark: SparkSession, path: str) -> int:
    """Bytes in the file or folder at ``path`` (all files below it)."""
    fs, jpath = hadoop_path(spark, path)
    return int(fs.getContentSummary(jpath).getLength())


def delete(spark: SparkSession, path: str) -> None:
    """Remove a file or a whole folder; nothing happens when it does not exist."""
    fs, jpath = hadoop_path(spark, path)
    if fs.exists(jpath):
        fs.delete(jpath, True)


def rename(spark: SparkSession, source: str, target: str) -> None:
    """Rename, or OSError: Hadoop reports a failure by returning false or, on some file systems, by throwing."""
    fs, jsource = hadoop_path(spark, source)
    try:
        renamed = fs.rename(jsource, hadoop_path(spark, target)[1])
    except Py4JJavaError as exc:
        raise OSError(f"could not rename {source} to {target}: {exc.java_exception.toString()}") from exc
    if not renamed:
        raise OSError(f"could not rename {source} to {target}")


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """``text`` as UTF-8 at ``path``, replacing any file there."""
    fs, jpath = hadoop_path(spark, path)
    stream = fs.create(jpath, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str:
    """The UTF-8 text of the file at ``path`` (local or any Hadoop file system)."""
    return spark.read.text(path, wholetext=True).first()[0]


def upload(spark: SparkSession, local: Path, target: str) -> None:
    """Copy a local file to ``target`` in the lake, replacing any file there."""
    fs, jtarget = hadoop_path(spark, target)
    fs.copyFromLocalFile(False, True, spark._jvm.org.apache.hadoop.fs.Path(str(local.resolve())), jtarget)


def local_copy(spark: SparkSession, folder: str, scratch: Path) -> Path:
    """``folder`` on the driver's disk: itself for a local lake, else a copy under ``scratch``."""
    fs, jpath = hadoop_path(spark, folder)
    if fs.getScheme() == "file":
        return Path(jpath.toUri().getPath())
    copy = scratch / jpath.getName()
    fs.copyToLocalFile(False, jpath, spark._jvm.org.apache.hadoop.fs.Path(str(copy.resolve())), True)
    return copy


@contextmanager
def staging_folder(spark: SparkSession, path: str) -> Iterator[str]:
    """``path``, emptied first and removed on exit whether the block succeeded or not."""
    delete(spark, path)
    try:
        yield path
    finally:
        delete(spark, path)


def replace_by_rename(spark: SparkSession, staged: str, target: str, previous: str) -> None:
    """Put ``staged`` at ``target``; an existing target is moved to ``previous``, restored on failure, then deleted.

    Readers see the old or the new output, never a partial one. A crash between the two renames leaves
    the target absent until the next run, with the old copy at ``previous``. A leftover ``previous`` is
    removed first: Hadoop's rename would move the target into an existing folder instead of onto it.
    """
    fs, jtarget = hadoop_path(spark, target)
    fs.mkdirs(jtarget.getParent())
    delete(spark, previous)
    replacing = bool(fs.exists(jtarget))
    if replacing:
        rename(spark, target, previous)
    try:
        rename(spark, staged, target)
    except OSError:
        if replacing:
            rename(spark, previous, target)
        raise
    delete(spark, previous)


def require_micros_timestamps(spark: SparkSession) -> None:
    """Fail unless Parquet timestamps are written as UTC-adjusted TIMESTAMP_MICROS (the lake's contract).

    Spark's default, INT96, reads back without a time zone in pyarrow.
    """
    written = spark.conf.get(PARQUET_TIMESTAMP_TYPE_KEY)
    if written != PARQUET_TIMESTAMP_TYPE:
        raise ValueError(f"{PARQUET_TIMESTAMP_TYPE_KEY} is {written!r}; the lake needs {PARQUET_TIMESTAMP_TYPE}: "
                         "build the session with jobs.spark.build_session")
