"""The DICOM allow-list, identifier extraction and path redaction (unit level, plus one synthetic series)."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset

from omnivmed.data.volume.dicom_privacy import (
    allowed_fields,
    identifiers_of,
    pseudonym,
    redact_path,
)
from omnivmed.data.volume.discover import classify, expand, read_volume
from support.volume_files import CT_DICOM_SERIES, PLANTED_IDENTIFIERS, write_dicom_series


def dataset(**elements) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


# Attributes DICOM PS3.15 Annex E (Basic Application Level Confidentiality Profile) removes or
# replaces, written out here from the standard (not from the module's lists), with plain values.
PS3_15_IDENTIFYING = {
    "PatientName": "Smithson^Janet",
    "PatientID": "PID-998877",
    "PatientBirthDate": "19230517",
    "PatientAddress": "12 Rue Planted, Basel",
    "PatientTelephoneNumbers": "+41 61 555 0101",
    "OtherPatientIDs": "ALT-0001",
    "AccessionNumber": "ACC-0815",
    "InstitutionName": "Hospital Saint Wendelin",
    "InstitutionAddress": "Spitalstrasse 21, Basel",
    "InstitutionalDepartmentName": "Radiology East",
    "ReferringPhysicianName": "Oberholzer^Ferdinand",
    "PerformingPhysicianName": "Keller^Anna",
    "OperatorsName": "Meier^Urs",
    "StationName": "PETCT2",
    "DeviceSerialNumber": "60064",
    "StudyID": "STUDY-42",
    "StudyDate": "20230102",
    "StudyTime": "101500",
    "AcquisitionDateTime": "20230102101500",
    "StudyDescription": "Chest follow-up",
    "PatientComments": "note",
    "ImageComments": "free text",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.2",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.3",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.4",
}


def test_no_attribute_the_confidentiality_profile_removes_is_kept():
    ds = dataset(Modality="CT", **PS3_15_IDENTIFYING)
    assert allowed_fields(ds) == (("Modality", "CT"),)  # even without the file's identifiers supplied
    # The ones that identify a person or a place are also found as identifiers (for text and paths).
    found = identifiers_of([ds])
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName", "StationName", "DeviceSerialNumber"):
        assert PS3_15_IDENTIFYING[keyword] in found, keyword
    assert {"Smithson", "Janet", "Oberholzer", "Ferdinand", PS3_15_IDENTIFYING["SeriesInstanceUID"]} <= found


def test_allowed_fields_keeps_only_the_allow_list():
    ds = dataset(Modality="MR", SeriesDescription="T2 AX", PatientName="Smithson^Janet", PatientID="PID-998877",
                 InstitutionName="Hospital Saint Wendelin", StudyDescription="free text not allowed", EchoTime="90")
    assert allowed_fields(ds) == (("Modality", "MR"), ("SeriesDescription", "T2 AX"), ("EchoTime", "90"))


def test_allowed_fields_drops_a_description_holding_the_patients_name():
    ds = dataset(PatientName="Smithson^Janet", Modality="CT", SeriesDescription="CT chest SMITHSON follow-up")
    fields = dict(allowed_fields(ds, identifiers_of([ds])))
    assert fields == {"Modality": "CT"}  # matched case-insensitively, the whole value dropped
    # Without the identifiers the same description would pass: the caller must supply them.
    assert dict(allowed_fields(ds))["SeriesDescription"] == "CT chest SMITHSON follow-up"


def test_allowed_fields_drops_uids_and_empty_values():
    ds = dataset(SeriesDescription="see 1.2.840.113619.2.55.3", Modality="", BodyPartExamined="CHEST",
                 ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    assert allowed_fields(ds) == (("BodyPartExamined", "CHEST"), ("ImageType", "ORIGINAL\\PRIMARY\\AXIAL"))


def test_identifiers_of_splits_person_names_and_skips_short_parts():
    ds = dataset(PatientName="Smithson^Janet^Q^^Dr", PatientID="PID-998877", AccessionNumber="123",
                 OtherPatientIDs=["ALT-0001", "ALT-0002"], SeriesDescription="not identifying")
    other = dataset(ReferringPhysicianName="Oberholzer^Ferdinand", SeriesInstanceUID="1.2.3.4.5")
    found = identifiers_of([ds, other])
    assert found == frozenset(
        {"Smithson", "Janet", "PID-998877", "ALT-0001", "ALT-0002", "Oberholzer", "Ferdinand", "1.2.3.4.5"}
    )
    # Components shorter than 4 characters ("Q", "Dr", the accession "123") would redact everything.
    assert not {"Q", "Dr", "123"} & found


def test_identifiers_of_the_real_series_stay_out_of_its_header():
    # The vendored series has blank names and study/series/SOP UIDs, but still carries an institution
    # address, a station name, a device serial number and two UIDs: all found, none in the header.
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(CT_DICOM_SERIES.iterdir())]
    found = identifiers_of(headers)
    assert {"PETCT2", "60064", str(headers[0].FrameOfReferenceUID), str(headers[0].IrradiationEventUID)} <= found
    assert any("Basel" in i for i in found) and len(found) == 5
    header = read_volume(expand(classify(CT_DICOM_SERIES))[0]).header
    assert dict(header)["SeriesDescription"] == "CT Body 3.0"
    for _, value in header:
        assert not any(i in value for i in found) and "Basel" not in value and "PETCT2" not in value


def test_redact_path():
    identifiers = frozenset({"Smithson", "PID-998877"})
    assert redact_path("raw/abdomen/series_2/ct", identifiers) == "raw/abdomen/series_2/ct"
    assert redact_path("scans/2023.01.02/v1.2", identifiers) == "scans/2023.01.02/v1.2"  # too few parts for a UID
    uid = "1.3.6.1.4.1.14519.5.2.1.7009.9004.1234"
    assert redact_path(f"tcia/{uid}/CT", identifiers) == f"tcia/{pseudonym(uid)}/CT"
    assert redact_path("tcia/CT.1.2.840.10008.5/img.dcm") == f"tcia/{pseudonym('CT.1.2.840.10008.5')}/img.dcm"
    assert redact_path("patients/smithson_j/ct", identifiers) == f"patients/{pseudonym('smithson_j')}/ct"
    assert redact_path("x/PID-998877.nii.gz", identifiers) == f"x/{pseudonym('PID-998877.nii.gz')}"
    # Pinned (the same in every process and on every machine) and not reversible by eye.
    assert pseudonym(uid) == "redacted-e569d1c24f42"


def test_real_file_names_are_redacted():
    name = next(CT_DICOM_SERIES.iterdir()).name  # CT.<SOP instance UID>
    redacted = redact_path(f"ct_dicom_series/{name}")
    assert redacted.startswith("ct_dicom_series/redacted-") and "1.3.12" not in redacted


@pytest.mark.parametrize("description", ["Synthetic series", "Chest for JANET smithson"])
def test_planted_identifiers_never_reach_the_volume_header(tmp_path, description):
    series = write_dicom_series(
        tmp_path / "Smithson_Janet" / "1.2.826.0.1.3680043.8.498.1", 3, identifiers=PLANTED_IDENTIFIERS,
        series_description=description, extra={"BodyPartExamined": "CHEST"},
    )
    volume = read_volume(expand(classify(series.folder))[0])
    header = dict(volume.header)
    assert header["BodyPartExamined"] == "CHEST" and header["Modality"] == "CT"
    assert ("SeriesDescription" in header) == (description == "Synthetic series")
    planted = [*PLANTED_IDENTIFIERS.values(), "Smithson", "Janet", series.series_uid, series.study_uid,
               series.frame_of_reference_uid, *series.sop_uids]
    for value in header.values():
        assert not any(p.casefold() in value.casefold() for p in planted), value
    identifiers = identifiers_of(expand(classify(series.folder))[0].series.headers)
    assert {"Smithson", "Janet", "PID-998877", "Hospital Saint Wendelin", series.series_uid} <= identifiers
    redacted = redact_path(series.folder.relative_to(tmp_path).as_posix(), identifiers)
    assert "Smithson" not in redacted and "1.2.826" not in redacted
