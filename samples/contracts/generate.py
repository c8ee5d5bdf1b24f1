"""Generate the sample contract-clause dataset (LEDGAR fine-tune shape), deterministically.

    python samples/contracts/generate.py      # rewrites train.jsonl and test.jsonl next to this file

Five labels; each clause is built from a label's sentence templates and slot fillers. The
test set uses the same templates with other fillers, so it is held-out text, not copies.
"""

import json
import random
from pathlib import Path

INSTRUCTION = (
    "Classify the contract clause into one of: termination, governing_law, confidentiality, "
    "indemnification, payment_terms. Answer with the label only."
)

PARTIES = [
    "the Company",
    "the Supplier",
    "the Customer",
    "the Licensee",
    "the Licensor",
    "the Contractor",
    "the Vendor",
    "the Client",
    "the Distributor",
    "the Service Provider",
    "the Purchaser",
    "the Seller",
]
DAYS = ["ten (10)", "fifteen (15)", "thirty (30)", "forty-five (45)", "sixty (60)", "ninety (90)"]
PLACES = [
    "the State of New York",
    "the State of Delaware",
    "England and Wales",
    "the State of California",
    "the Province of Ontario",
    "Ireland",
    "the State of Texas",
    "Singapore",
    "the Commonwealth of Massachusetts",
]
COURTS = [
    "the state and federal courts located in New York County",
    "the courts of London",
    "the courts of Wilmington, Delaware",
    "the courts sitting in San Francisco County",
    "the courts of Toronto",
    "the courts of Dublin",
    "the courts of Singapore",
]
INFO = [
    "Confidential Information",
    "proprietary information",
    "trade secrets",
    "non-public business information",
    "technical data and know-how",
    "customer lists and pricing information",
]
CLAIMS = [
    "any and all claims, losses, damages, liabilities and expenses",
    "all third-party claims",
    "any losses, costs and reasonable attorneys' fees",
    "any claim, demand, suit or proceeding",
    "all liabilities, judgments and settlements",
]
CAUSES = [
    "arising out of its breach of this Agreement",
    "resulting from its gross negligence or wilful misconduct",
    "relating to any infringement of intellectual property rights",
    "caused by the acts or omissions of its personnel",
    "arising from its violation of applicable law",
]
AMOUNTS = [
    "all undisputed amounts",
    "the fees set forth in Exhibit B",
    "each invoice",
    "the Purchase Price",
    "the monthly service fee",
    "the license fees",
]
RATES = [
    "one percent (1%) per month",
    "the lesser of 1.5% per month or the maximum lawful rate",
    "eight percent (8%) per annum",
    "the prime rate plus two percent (2%)",
]

TEMPLATES = {
    "termination": [
        "Either party may terminate this Agreement upon {days} days' prior written notice to the other party.",
        "{party} may terminate this Agreement immediately by written notice if the other party materially breaches "
        "this Agreement and fails to cure such breach within {days} days after receiving notice thereof.",
        "This Agreement shall terminate automatically if either party becomes insolvent, makes an assignment for the "
        "benefit of creditors, or has a receiver appointed over its assets.",
        "Upon expiration or termination of this Agreement for any reason, {party} shall cease all use of the "
        "deliverables and return all materials within {days} days.",
        "{party} may terminate this Agreement for convenience at any time by giving {days} days' written notice.",
        "Termination of this Agreement shall not affect any rights or obligations accrued prior to the effective "
        "date of termination, and {party} shall remain liable for amounts due through that date.",
    ],
    "governing_law": [
        "This Agreement shall be governed by and construed in accordance with the laws of {place}, without regard "
        "to its conflict of laws principles.",
        "The parties irrevocably submit to the exclusive jurisdiction of {court} for any dispute arising under this "
        "Agreement.",
        "All matters arising out of or relating to this Agreement are governed by the laws of {place}, and any "
        "action shall be brought exclusively in {court}.",
        "The United Nations Convention on Contracts for the International Sale of Goods shall not apply; this "
        "Agreement is governed by the laws of {place}.",
        "Each party waives any objection to venue in {court} and agrees that the laws of {place} govern this "
        "Agreement.",
        "This Agreement and any non-contractual obligations arising from it shall be governed by the law of {place}.",
    ],
    "confidentiality": [
        "{party} shall hold all {info} of the other party in strict confidence and shall not disclose it to any "
        "third party without prior written consent.",
        "The receiving party shall use the {info} solely for the purpose of performing this Agreement and shall "
        "protect it with at least a reasonable degree of care.",
        "The obligations of confidentiality set forth herein shall survive termination of this Agreement for a "
        "period of {days} months.",
        "{info} does not include information that is or becomes publicly available through no fault of the "
        "receiving party.",
        "Upon request, {party} shall promptly return or destroy all {info} and certify such destruction in writing.",
        "{party} may disclose {info} to its employees and advisors who have a need to know and are bound by "
        "obligations of non-disclosure no less protective than these.",
    ],
    "indemnification": [
        "{party} shall indemnify, defend and hold harmless the other party from and against {claims} {cause}.",
        "{party} agrees to indemnify the other party and its officers, directors and employees against {claims} "
        "{cause}.",
        "The indemnified party shall give prompt written notice of any claim and allow {party} to control the "
        "defense and settlement of such claim.",
        "{party} shall have no obligation to indemnify for {claims} to the extent caused by the indemnified "
        "party's own negligence.",
        "Each party shall defend and indemnify the other against {claims} {cause}, subject to the limitations in "
        "this Section.",
        "{party} shall reimburse the other party for {claims} incurred in connection with any third-party action "
        "{cause}.",
    ],
    "payment_terms": [
        "{party} shall pay {amount} within {days} days after the date of the invoice.",
        "Late payments shall bear interest at {rate} from the due date until paid in full.",
        "All amounts payable under this Agreement are exclusive of taxes, which shall be borne by {party}.",
        "{party} shall invoice monthly in arrears, and {amount} shall be due and payable within {days} days of "
        "receipt.",
        "If {party} disputes any invoice in good faith, it shall pay the undisputed portion and notify the other "
        "party within {days} days.",
        "Payments shall be made in United States dollars by wire transfer to the account designated by {party}; "
        "overdue sums accrue interest at {rate}.",
    ],
}


def fill(template: str, rng: random.Random, pool: dict) -> str:
    return template.format(
        party=rng.choice(pool["parties"]),
        days=rng.choice(DAYS),
        place=rng.choice(pool["places"]),
        court=rng.choice(pool["courts"]),
        info=rng.choice(INFO),
        claims=rng.choice(CLAIMS),
        cause=rng.choice(CAUSES),
        amount=rng.choice(AMOUNTS),
        rate=rng.choice(RATES),
    )


def build(count_per_label: int, seed: int, pool: dict, exclude: frozenset = frozenset()) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    seen = set(exclude)
    for label, templates in TEMPLATES.items():
        made = 0
        while made < count_per_label:
            text = fill(rng.choice(templates), rng, pool)
            if text in seen:
                tail = rng.choice(
                    ["Notwithstanding the foregoing, this Section prevails.", "This Section is material."]
                )
                text = f"{text} {tail}"
                if text in seen:
                    continue
            seen.add(text)
            rows.append({"instruction": INSTRUCTION, "input": text, "output": label})
            made += 1
    rng.shuffle(rows)
    return rows


def main() -> None:
    here = Path(__file__).resolve().parent
    # Test clauses use different parties/places/courts than training ones: held-out wording.
    train_pool = {"parties": PARTIES[:8], "places": PLACES[:6], "courts": COURTS[:5]}
    test_pool = {"parties": PARTIES[8:], "places": PLACES[6:], "courts": COURTS[5:]}
    train = build(40, 1, train_pool)
    # No test clause repeats a training clause word for word.
    test = build(12, 2, test_pool, exclude=frozenset(row["input"] for row in train))
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (here / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{name}: {len(rows)} records")


if __name__ == "__main__":
    main()
