"""The answer classes of the surgical VQA sets, as their anchor loaders define them.

Order and spelling are the anchors' (Surgical_VQA ``dataloaderClassification.py``,
SurgicalGPT ``dataloaderGPT2Classification.py``): an evaluation that reports
accuracy or macro F1 over these classes needs the same list, so the class
index of every answer goes into provenance. Each class also says which of the
schema's surgical tasks a question answered by it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

CHOLEC80_PHASES = (
    "calot triangle dissection",
    "gallbladder dissection",
    "clipping cutting",
    "gallbladder retraction",
    "cleaning coagulation",
    "gallbladder packaging",
    "preparation",
)
# Anchor order (13 classes): yes/no, tool counts 0-3, the 7 phases.
CHOLEC80_CLASSES = (
    "no", "calot triangle dissection", "yes", "1", "2", "gallbladder dissection",
    "clipping cutting", "gallbladder retraction", "0", "cleaning coagulation",
    "gallbladder packaging", "preparation", "3",
)  # fmt: skip

ENDOVIS18_ACTIONS = (
    "Idle", "Grasping", "Retraction", "Tissue_Manipulation", "Tool_Manipulation", "Cutting",
    "Cauterization", "Suction", "Looping", "Suturing", "Clipping", "Staple", "Ultrasound_Sensing",
)  # fmt: skip
ENDOVIS18_LOCATIONS = ("left-top", "right-top", "left-bottom", "right-bottom")
# Anchor order (18 classes): the organ, 13 instrument actions, 4 quadrants.
ENDOVIS18_CLASSES = ("kidney", *ENDOVIS18_ACTIONS, *ENDOVIS18_LOCATIONS)

PSIAVA_LOCATIONS = ("top left", "top right", "bottom left", "bottom right")
PSIAVA_PHASES = (
    "Complejo_venoso_dorsal", "Control_Pediculos", "Espacio_de_Retzius", "Fascia_Denonvilliers",
    "Id_Cuello_Vesical", "LPAD", "LPAI", "Rec_Cuello_Vesical", "Separacion_Prostata_Uretra",
    "Tiempo_muerto", "Vesículas_Seminales",
)  # fmt: skip
PSIAVA_STEPS = (
    "Anudar", "Clip_Pediculos", "Corte", "Corte_Prostata", "Corte_Vejiga", "Diseccion_Denon",
    "Diseccion_Ganglios_Iliacos", "Diseccion_Ganglios_Obturadores", "Diseccion_Prevesical",
    "Diseccion_Prostata", "Diseccion_Seminal", "Empacar_Ganglios", "Empacar_Prostata", "Halar_sutura",
    "Id_Vena_Arteria_Iliaca", "Pasar_Aguja_Cuello", "Pasar_Aguja_Cvdp", "Pasar_Aguja_Uretra",
    "Succion", "Sujetar_Prostata",
)  # fmt: skip
# Anchor order of the 35 classes the anchors train on (C1 location, C3 phase, C4 step). The anchor
# list goes on with C2's instrument-action combinations; C2 is built only on request and its
# answers are kept as written, without a class index.
PSIAVA_CLASSES = (*PSIAVA_LOCATIONS, *PSIAVA_PHASES, *PSIAVA_STEPS)


@dataclass(frozen=True)
class Vocabulary:
    name: str
    classes: tuple[str, ...]

    def index(self, answer: str) -> int | None:
        try:
            return self.classes.index(answer)
        except ValueError:
            return None


CHOLEC80 = Vocabulary("cholec80_vqa_13", CHOLEC80_CLASSES)
ENDOVIS18 = Vocabulary("endovis18_vqa_18", ENDOVIS18_CLASSES)
PSIAVA = Vocabulary("psiava_vqa_35", PSIAVA_CLASSES)


def cholec80_task(answer: str) -> str:
    return "phase_recognition" if answer in CHOLEC80_PHASES else "surgical_vqa"


def endovis18_task(answer: str) -> str:
    if answer in ENDOVIS18_LOCATIONS:
        return "location_recognition"
    if answer in ENDOVIS18_ACTIONS:
        return "instrument_recognition"  # "what is the state of <instrument>?"
    return "surgical_vqa"


PSIAVA_CATEGORY_TASKS = {
    "C1": "location_recognition",
    "C2": "instrument_recognition",  # actions of an instrument
    "C3": "phase_recognition",
    "C4": "step_recognition",
}
